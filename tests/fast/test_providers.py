"""The provider records (hub/gpuhub/providers.py): each names a real OAuthenticator class, and
what the records say matches what gpuhub promised before they existed (the behaviour per
provider is tested in test_configure.py and test_settings.py)."""

from __future__ import annotations

import pytest
from oauthenticator.oauth2 import OAuthenticator

from gpuhub.providers import PROVIDER_SETTINGS, PROVIDERS
from gpuhub.settings import GROUP_SUPPORT, SETTINGS


@pytest.mark.parametrize("name", PROVIDERS)
def test_each_provider_names_an_oauthenticator(name):
    assert issubclass(PROVIDERS[name].authenticator_class(), OAuthenticator)


def test_groups_are_checked_where_the_provider_has_them():
    assert GROUP_SUPPORT == {"demo", "generic", "github", "gitlab", "azuread"}
    assert all(p.group_meaning for p in PROVIDERS.values() if p.groups)


def test_default_username_claims_are_stable_where_the_provider_has_such_a_claim():
    claims = {name: p.username_claim for name, p in PROVIDERS.items()}
    assert claims == {"demo": "sub", "generic": "sub", "azuread": "oid", "github": "login",
                      "gitlab": "username", "google": "email"}


def test_every_provider_variable_is_one_of_the_hubs_declared_settings():
    assert set(PROVIDER_SETTINGS) <= set(SETTINGS)
    assert len({s.name for s in SETTINGS}) == len(SETTINGS)
