from datetime import timedelta

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

from django_alarms import alarms


@require_POST
@transaction.atomic
def remind(request: HttpRequest, account: int) -> JsonResponse:
    """Schedule a reminder in the request's transaction: no commit, no alarm."""
    alarm = alarms.schedule(
        "send_reminder",
        {"account": account},
        delay=timedelta(hours=1),
        key=f"account-{account}",
        name="reminder",
        if_exists="replace",
    )
    return JsonResponse({"alarm": str(alarm.id), "due_at": alarm.due_at.isoformat()})
