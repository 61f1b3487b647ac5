import sys

from runtime.entrypoint import main
from services.identity.bootstrap import IdentitySettings, create_app

sys.exit(main(IdentitySettings, create_app))
