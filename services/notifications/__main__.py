import sys

from runtime.entrypoint import main
from services.notifications.bootstrap import NotificationsSettings, create_app

sys.exit(main(NotificationsSettings, create_app))
