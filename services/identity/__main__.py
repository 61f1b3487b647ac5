from runtime.entrypoint import serve
from services.identity.bootstrap import IdentitySettings, create_app

settings = IdentitySettings()
serve(create_app(settings), settings)
