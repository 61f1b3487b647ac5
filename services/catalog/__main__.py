import sys

from runtime.entrypoint import main
from services.catalog.bootstrap import CatalogSettings, create_app

sys.exit(main(CatalogSettings, create_app))
