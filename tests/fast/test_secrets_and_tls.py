"""Generated secrets and the local certificate: created once, mode 600, renewed when due."""

import datetime as dt
import stat

from cryptography import x509

from gpu_monitor.env import read_secret_file
from gpuhub.init import main as init_main
from gpuhub.secrets import ensure_secret
from gpuhub.tls import needs_certificate, write_localhost_certificate


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_secret_created_once_with_mode_600(tmp_path):
    path = tmp_path / "d" / "cookie_secret"
    assert ensure_secret(path) is True
    first = read_secret_file("TEST", path)
    assert len(first) == 64 and int(first, 16) >= 0
    assert mode(path) == 0o600
    assert ensure_secret(path) is False
    assert read_secret_file("TEST", path) == first


def test_existing_secret_is_kept_but_tightened(tmp_path):
    path = tmp_path / "restored"
    path.write_text("from-backup")
    path.chmod(0o644)
    assert ensure_secret(path) is False
    assert read_secret_file("TEST", path) == "from-backup" and mode(path) == 0o600


def test_certificate_signed_by_the_local_ca_and_renewal(tmp_path):
    cert = tmp_path / "local.crt"
    assert needs_certificate(cert)
    ca_key = tmp_path / "secrets" / "local-ca.key"
    write_localhost_certificate(tmp_path, ca_key, ("hub.example.org", "localhost"))
    assert mode(tmp_path / "local.key") == 0o600 and mode(ca_key) == 0o600
    assert not (tmp_path / "local-ca.key").exists()  # the proxy's directory holds no CA key
    server, ca = x509.load_pem_x509_certificates(cert.read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["hub.example.org", "localhost"]
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert not needs_certificate(cert)
    in_340_days = dt.datetime.now(dt.UTC) + dt.timedelta(days=340)
    assert needs_certificate(cert, now=in_340_days)
    # renewal keeps the CA, so a browser that trusts it keeps trusting the new certificate
    ca_before = (tmp_path / "local-ca.crt").read_bytes()
    write_localhost_certificate(tmp_path, ca_key)
    assert (tmp_path / "local-ca.crt").read_bytes() == ca_before
    x509.load_pem_x509_certificates(cert.read_bytes())[0].verify_directly_issued_by(ca)


def test_init_creates_everything_and_refuses_bad_config(environ, tmp_path, capsys, monkeypatch):
    import gpuhub.init
    monkeypatch.setattr(gpuhub.init, "POSTGRES_UID", None)  # cannot chown as a normal user
    secrets = tmp_path / "fresh"
    env = {**environ, "GPUHUB_SECRETS_DIR": str(secrets), "GPUHUB_DB_PASSWORD_FILE": str(tmp_path / "db" / "pw"),
           "GPUHUB_CERTS_DIR": str(tmp_path / "certs")}
    assert init_main(env) == 0
    assert sorted(p.name for p in secrets.iterdir()) == ["cookie_secret", "crypt_key", "gpu_allocator_token", "local-ca.key", "pgpass",  # noqa: E501
                                                         "proxy_api_password"]
    assert mode(tmp_path / "db" / "pw") == 0o600
    password = read_secret_file("TEST", tmp_path / "db" / "pw")
    assert read_secret_file("TEST", secrets / "pgpass") == f"db:5432:jupyterhub:jupyterhub:{password}"
    assert mode(secrets / "pgpass") == 0o600
    assert (tmp_path / "certs" / "local.crt").exists()
    out = capsys.readouterr().out
    for name in ("cookie_secret", "crypt_key", "proxy_api_password"):
        assert read_secret_file("TEST", secrets / name) not in out
    assert password not in out

    assert init_main({**env, "GPUHUB_AUTHENTICATOR": "nope"}) == 1
    assert "gpuhub: configuration error: GPUHUB_AUTHENTICATOR: unknown value 'nope'" in capsys.readouterr().err
