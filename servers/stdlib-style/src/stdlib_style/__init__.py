"""Falcon (WSGI) hash server on gunicorn's gthread worker: the stand-in for Go's net/http."""
