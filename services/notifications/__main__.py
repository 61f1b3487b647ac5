from runtime.entrypoint import serve
from services.notifications.bootstrap import NotificationsSettings, create_app

settings = NotificationsSettings()
serve(create_app(settings), settings)
