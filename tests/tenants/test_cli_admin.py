"""The Django-side CLI: tenant/key/purge commands, their output contract and exit codes."""

from __future__ import annotations

import pytest
from django_tenants.utils import schema_exists

from fortranspire_site.cli import main
from tenants import services
from tenants.models import ApiKey, Tenant


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_key_create_prints_the_raw_key_as_the_last_line(tenant_a, capsys):
    code, out, _ = run_cli(
        capsys, "key", "create", "--tenant", "a", "--name", "ci", "--scopes", "translate,history"
    )
    assert code == 0
    raw = out.strip().splitlines()[-1]
    key = services.api_key_authenticate(raw_key=raw, tenant=tenant_a)
    assert key.name == "ci" and key.scopes == ["translate", "history"]


def test_key_list_shows_prefixes_and_revoke_by_prefix_refuses_the_key(tenant_a, capsys):
    key, raw = services.api_key_create(tenant=tenant_a, name="listed", scopes=None)
    code, out, _ = run_cli(capsys, "key", "list", "--tenant", "a")
    assert code == 0 and key.prefix in out and raw not in out and key.digest not in out

    code, out, _ = run_cli(capsys, "key", "revoke", key.prefix)
    assert code == 0 and "revoked" in out
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None


def test_tenant_create_list_delete_round_trip(db, capsys):
    assert run_cli(capsys, "tenant", "create", "cli_t", "--domain", "cli-t.localhost")[0] == 0
    assert schema_exists("cli_t")
    code, out, _ = run_cli(capsys, "tenant", "list")
    assert code == 0 and "cli_t\tcli-t.localhost" in out
    assert run_cli(capsys, "tenant", "delete", "cli_t", "--yes")[0] == 0
    assert not schema_exists("cli_t") and not Tenant.objects.filter(schema_name="cli_t").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (("tenant", "create", "admin", "--domain", "x.localhost"), "reserved"),
        (("tenant", "create", "Bad-Slug", "--domain", "x.localhost"), "invalid tenant slug"),
        (("key", "create", "--tenant", "nope"), "no tenant"),
        (("key", "create", "--tenant", "a", "--scopes", "root"), "unknown scope"),
        (("key", "revoke", "fsp_zzzzzzzz"), "no API key"),
        (("tenant", "delete", "nope", "--yes"), "no tenant"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_no_traceback(tenant_a, capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err and "Traceback" not in err + out


def test_purge_reports_deleted_counts(tenant_a, capsys):
    code, out, _ = run_cli(capsys, "purge")
    assert code == 0 and "a: deleted" in out and "total:" in out
