"""The authentication backend: Django's, with the user's company fetched with the user."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend


class CompanyUserBackend(ModelBackend):
    """ModelBackend whose per-request user lookup joins the company.

    Every dashboard page reads `request.user.company` (company_of, the navbar's
    company name): fetched together it is one query per request instead of two.
    """

    def get_user(self, user_id):
        user_model = get_user_model()
        try:
            user = user_model._default_manager.select_related("company").get(pk=user_id)
        except user_model.DoesNotExist:
            return None
        return user if self.user_can_authenticate(user) else None
