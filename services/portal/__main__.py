from runtime.entrypoint import serve
from services.portal.bootstrap import create_app
from services.portal.settings import PortalSettings

settings = PortalSettings()
serve(create_app(settings), settings)
