"""Authentication: built-in accounts and identity providers whose groups drive quotas.

- ``native``: built-in accounts (NativeAuthenticator: sign-up, admin approval, password rules).
- ``oauth``: OpenID Connect / OAuth2 (university SSO, Keycloak, Dex), GitHub and Google.
- ``ldap``: LDAP / Active Directory.

Every identity-provider class is ``GroupMappingMixin`` (``mixin.py``) over a maintained upstream
authenticator: the provider says which groups a person is in, the mixin maps them to hub groups,
roles and admin status (``policy.py``, pure) and refuses people outside the allowed groups.

Only the native class is imported here: the others pull in their upstream libraries and are
loaded through their entry points when ``auth.kind`` selects them.
"""

from .native import NATIVE_TEMPLATES, GPULabNativeAuthenticator

__all__ = ["NATIVE_TEMPLATES", "GPULabNativeAuthenticator"]
