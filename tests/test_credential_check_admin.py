from django.test import Client

from instances import checks
from patchworks_site.models import Role


def test_staff_review_any_companys_checks_redacted_in_the_admin(
    make_user, company, other_company, make_connector, make_instance, httpserver
):
    httpserver.expect_request("/me").respond_with_json({"error": "nope"}, status=401)
    connector = make_connector(other_company, name="Globex API", base_url=httpserver.url_for(""))
    instance = make_instance(connector, "Globex live", secrets={"api_token": "globex-secret-value"})
    _, check = checks.recheck(instance)

    staff = make_user(company, Role.READ_ONLY, "staffer")
    staff.is_staff = True
    staff.save()
    client = Client()
    client.force_login(staff)
    changelist = client.get("/admin/instances/credentialcheck/")
    assert changelist.status_code == 200
    assert "Globex API" in changelist.content.decode()
    page = client.get(f"/admin/instances/credentialcheck/{check.pk}/change/").content.decode()
    assert "401" in page and "[redacted]" in page
    assert "globex-secret-value" not in page


def test_non_staff_users_cannot_open_the_admin(make_user, company, client_for):
    response = client_for(make_user(company, Role.ADMINISTRATOR)).get("/admin/instances/credentialcheck/")
    assert response.status_code == 302


def test_every_model_is_in_the_admin_and_its_changelist_opens(admin_user, company, sandbox_listing, install, make_instance):
    from django.contrib import admin

    connector = install(sandbox_listing, company)
    make_instance(connector, auth_method=connector.auth_methods.get(key="token"))
    admin_user.is_staff = admin_user.is_superuser = True
    admin_user.save()
    client = Client()
    client.force_login(admin_user)
    for model in admin.site._registry:
        meta = model._meta
        response = client.get(f"/admin/{meta.app_label}/{meta.model_name}/")
        assert response.status_code == 200, meta.label
