"""bcrypt's 72-byte limit on built-in accounts' passwords (``auth/native.py``): what is compared,
and that an account made before bcrypt 5 (which ignored what came after 72 bytes) still signs in."""

import bcrypt
import pytest

from hub_plugins.auth.native import as_checked, too_long


@pytest.mark.parametrize("password, checked", [
    ("a" * 72, "a" * 72),                    # at the limit: unchanged
    ("a" * 75, "a" * 72),                    # over it: the first 72 bytes, as bcrypt < 5 read it
    ("a" * 71 + "é", "a" * 71),              # é (2 bytes) cut in two: left out
    ("é" * 36, "é" * 36),                    # 72 bytes exactly
    ("", ""),
])
def test_what_is_compared(password, checked):
    assert as_checked(password) == checked
    assert too_long(password) == (len(password.encode()) > 72)


def test_an_account_made_before_bcrypt_5_with_a_long_password_still_signs_in():
    long = "correct horse battery staple is a very long passphrase that people do use!!"
    stored = bcrypt.hashpw(long.encode()[:72], bcrypt.gensalt(4))  # what bcrypt < 5 stored
    assert bcrypt.hashpw(as_checked(long).encode(), stored) == stored
