"""The web app of ``loradex serve``: server-rendered HTML pages (Jinja2, autoescape on), sessions
signed in with the API's tokens, CSRF on every form, images from the blob store.

``common`` holds what every page uses (templates, ``render``, ``current_principal``,
``require_form``, ``page``); each ``*_pages`` module registers its router with
``registry.server.app.register_router``. See docs/WEB.md.
"""
