from runtime.entrypoint import serve
from services.matching.bootstrap import MatchingSettings, create_app

settings = MatchingSettings()
serve(create_app(settings), settings)
