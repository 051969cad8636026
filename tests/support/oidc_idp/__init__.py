"""A real OpenID Connect provider for the tests: django-oidc-provider in a tiny Django project,
run as its own process (``runserver``) by ``tests/support/idp.py``. Groups are Django groups,
released in a ``groups`` claim when the client asks for the ``groups`` scope."""
