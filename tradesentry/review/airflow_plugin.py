"""Mount the review app into the Airflow 3 API server (``fastapi_apps``) and show it in the UI.

Airflow gives a mounted FastAPI app no authentication of its own: the app is built with
``auth_mode='airflow'``, so every route (pages, API, CSV) asks Airflow's auth manager who the user is
(JWT cookie or bearer token), refuses anonymous requests (401) and maps the name through the app's user
table (unknown or inactive: 403). The app is created on first request, so importing the plugin in the
scheduler or the dag processor costs nothing.

Install: put a one-line module in the Airflow plugins folder,
``from tradesentry.review.airflow_plugin import TradesentryReviewPlugin  # noqa: F401``,
or register the entry point ``airflow.plugins`` -> ``tradesentry.review.airflow_plugin:TradesentryReviewPlugin``.
"""

from __future__ import annotations

import threading
from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/tradesentry-review"


class LazyReviewApp:
    """An ASGI app that builds the review app (auth_mode='airflow') on its first call."""

    def __init__(self, settings: Any = None) -> None:
        self._settings = settings
        self._app: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    from .app import create_app

                    self._app = create_app(self._settings, auth_mode="airflow", secure_cookies=False)
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.get()(scope, receive, send)


review_app = LazyReviewApp()


class TradesentryReviewPlugin(AirflowPlugin):
    name = "tradesentry_review"
    fastapi_apps = [  # noqa: RUF012
        {"app": review_app, "url_prefix": URL_PREFIX, "name": "Tradesentry review"},
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "Anomaly review",
            "href": URL_PREFIX + "/",
            "destination": "nav",
            "category": "browse",
            "url_route": "tradesentry-review",
        },
    ]
