"""HTTPS, one part at a time: when a certificate is renewed, how the agent's nginx
configuration serves it, and which addresses it believes in proxied mode. Pure, except
one ``nginx -t`` of a rendered TLS configuration."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from smart_agent import tls
from smart_agent.nginx import Nginx, ServePlan, render_config
from smart_agent.settings import CLOUDFLARE_IPS, AgentSettings
from smart_operator import certificates, domains
from smart_operator.clients.acme import account_key
from smart_operator.settings import OperatorSettings

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


# -- renewal ---------------------------------------------------------------------------


def test_renewal_comes_at_two_thirds_of_the_lifetime_less_a_fixed_jitter() -> None:
    times = [certificates.renewal_time(T0, T0 + 90 * DAY, f"uid-{n}:serial") for n in range(200)]
    assert all(T0 + 51 * DAY <= t <= T0 + 60 * DAY for t in times)
    assert len(set(times)) > 150  # spread over the window, not one burst
    # The same Domain and certificate always get the same moment (every replica agrees).
    assert certificates.renewal_time(T0, T0 + 90 * DAY, "uid-1:serial") == times[1]


def test_a_certificate_is_due_at_its_time_and_when_missing_or_expired() -> None:
    state = certificates.CertificateState(T0, T0 + 90 * DAY, "ab")
    at = certificates.renewal_time(T0, T0 + 90 * DAY, "u:ab")
    assert not certificates.due(state, "u", at - dt.timedelta(seconds=1))
    assert certificates.due(state, "u", at)
    assert certificates.due(certificates.CertificateState(None, None, None), "u", T0)
    assert certificates.due(state, "u", T0 + 91 * DAY)
    assert certificates.seconds_until_due(state, "u", T0) == pytest.approx(
        (at - T0).total_seconds()
    )


def test_failed_attempts_back_off_but_leave_time_before_expiry() -> None:
    delays = [certificates.retry_delay(n, None, T0) for n in range(1, 10)]
    assert delays[:4] == [60, 120, 240, 480] and max(delays) == 3600
    # Two hours left: never wait longer than an eighth of them.
    assert certificates.retry_delay(9, T0 + dt.timedelta(hours=2), T0) == 900
    failing = certificates.CertificateState(
        T0, T0 + 90 * DAY, "ab", failures=3, last_attempt=T0 + 70 * DAY
    )
    assert not certificates.due(failing, "u", T0 + 70 * DAY + dt.timedelta(seconds=200))
    assert certificates.due(failing, "u", T0 + 70 * DAY + dt.timedelta(seconds=240))


def test_challenge_records_are_left_to_the_certificate_step() -> None:
    uid = "11111111-2222-3333-4444-555555555555"
    comment = domains.record_marker("inst", uid)
    existing = [
        domains.ExistingRecord("1", "TXT", "_acme-challenge.example.com", "x", (), comment),
        domains.ExistingRecord("2", "TXT", "stale.example.com", "x", (), comment),
    ]
    plan = domains.plan_records([], existing, uid)
    assert plan.delete == ["2"]
    assert certificates.certificate_names("example.com") == ["example.com", "www.example.com"]


def test_the_acme_account_key_is_derived_from_the_operator_secret() -> None:
    one, again, other = account_key(b"s1"), account_key(b"s1"), account_key(b"s2")
    assert one.private_numbers() == again.private_numbers()
    assert one.private_numbers() != other.private_numbers()


def test_lets_encrypt_is_the_default_with_a_staging_switch() -> None:
    assert OperatorSettings().acme_directory == "https://acme-v02.api.letsencrypt.org/directory"
    staging = OperatorSettings(acme_staging=True).acme_directory
    assert staging == "https://acme-staging-v02.api.letsencrypt.org/directory"
    own = OperatorSettings(acme_directory_url="https://127.0.0.1:14000/dir")
    assert own.acme_directory == "https://127.0.0.1:14000/dir"
    assert OperatorSettings().hsts_max_age == 31536000


# -- the agent's nginx ------------------------------------------------------------------


def _pair(folder: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - DAY)
        .not_valid_after(now + DAY)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "privkey.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def test_without_a_certificate_the_site_stays_on_plain_http(tmp_path: Path) -> None:
    settings = AgentSettings(root=tmp_path, listen="127.0.0.1:18080")
    text = render_config(
        settings, ServePlan(None, "2026-11-26", "ab" * 32, tls=tls.stage(settings))
    )
    assert "ssl" not in text and "return 301" not in text


def test_with_a_certificate_http_redirects_and_https_uses_modern_tls(tmp_path: Path) -> None:
    settings = AgentSettings(root=tmp_path, listen="127.0.0.1:18080", tls_listen="127.0.0.1:18443")
    _pair(settings.tls_source_dir)
    files = tls.stage(settings)
    assert files is not None and files.key.stat().st_mode & 0o777 == 0o600
    text = render_config(settings, ServePlan(None, "2026-11-26", "ab" * 32, tls=files))
    assert "listen 127.0.0.1:18443 ssl default_server;" in text
    assert "return 301 https://$host:18443$request_uri;" in text
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in text
    assert "ssl_session_tickets off;" in text
    assert 'https "max-age=31536000";' in text  # only over HTTPS
    assert "add_header Strict-Transport-Security $smart_hsts always;" in text
    assert str(files.key) in text and "privkey.pem" not in text  # the agent's own copy
    # A new certificate is a new configuration (the agent reloads nginx for it).
    _pair(settings.tls_source_dir)
    again = tls.stage(settings)
    assert again is not None and again.digest != files.digest
    assert render_config(settings, ServePlan(None, "d", "ab" * 32, tls=again)) != render_config(
        settings, ServePlan(None, "d", "ab" * 32, tls=files)
    )
    tls.prune(settings, again)
    assert sorted(p.name for p in settings.tls_dir.iterdir()) == sorted(
        [again.cert.name, again.key.name]
    )
    nginx = Nginx(settings)
    asyncio.run(nginx.test(render_config(settings, ServePlan(None, "d", "ab" * 32, tls=again))))


def test_hsts_can_be_turned_off(tmp_path: Path) -> None:
    settings = AgentSettings(root=tmp_path, hsts_max_age=0)
    _pair(settings.tls_source_dir)
    text = render_config(settings, ServePlan(None, "d", "ab" * 32, tls=tls.stage(settings)))
    assert (
        "Strict-Transport-Security" not in text and "return 301 https://$host$request_uri;" in text
    )


def test_proxied_mode_believes_cloudflare_addresses_only(tmp_path: Path) -> None:
    settings = AgentSettings(root=tmp_path, proxied=True, real_ip_from=["127.0.0.0/8"])
    text = render_config(settings, ServePlan(None, "d", "ab" * 32))
    trusted = [
        line.split()[1].rstrip(";") for line in text.splitlines() if "set_real_ip_from" in line
    ]
    assert trusted == list(CLOUDFLARE_IPS)
    assert "real_ip_header CF-Connecting-IP;" in text and "real_ip_recursive" not in text
    assert "2606:4700::/32" in trusted and "104.16.0.0/13" in trusted


def test_only_the_sites_names_are_redirected_when_the_domain_is_known(tmp_path: Path) -> None:
    settings = AgentSettings(root=tmp_path, domain="shop.example")
    _pair(settings.tls_source_dir)
    text = render_config(settings, ServePlan(None, "d", "ab" * 32, tls=tls.stage(settings)))
    assert '"~^http\\|(www\\.)?shop\\.example\\|" 1;' in text
    assert '"~^http\\|" 1;' not in text  # a bare address is answered over HTTP as before
