import sys

from runtime.entrypoint import main
from services.matching.bootstrap import MatchingSettings, create_app

sys.exit(main(MatchingSettings, create_app))
