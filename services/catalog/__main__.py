from runtime.entrypoint import serve
from services.catalog.bootstrap import CatalogSettings, create_app

settings = CatalogSettings()
serve(create_app(settings), settings)
