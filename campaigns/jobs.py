"""Campaign messages, built in the worker from stored ids, and who receives them."""

from __future__ import annotations

from campaigns import services
from campaigns.models import Campaign, CampaignInvitation, CampaignUpdate, Follower
from core.extensions import db
from core.queue import periodic
from core.urls import external_url
from members.models import normalise_account_email
from notifications.services import Category, Delivery, Reader, audience, message


def followers_still_following(payload: dict, readers: list[Reader]) -> set[Reader]:
    """The readers of an update who still follow the campaign."""
    news = db.session.get(CampaignUpdate, payload["update_id"])
    return services.still_following(news.campaign_id, readers) if news else set()


@message(
    "campaign_update", category=Category.CAMPAIGNS, still_in_audience=followers_still_following
)
def update_message(payload: dict, delivery: Delivery) -> dict | None:
    """An organiser's update, to a follower, while the campaign is still public."""
    news = db.session.get(CampaignUpdate, payload["update_id"])
    if news is None:
        return None
    campaign = db.session.get(Campaign, news.campaign_id)
    if campaign is None or not campaign.is_published:
        return None
    return {
        "update": news,
        "campaign": campaign,
        "campaign_link": external_url("campaigns.show", campaign_id=news.campaign_id),
    }


@audience("campaign-followers")
def followers(payload: dict):
    """Who receives a campaign update: its confirmed followers."""
    return services.follower_audience(payload["update_id"])


@message("confirm_follow", transactional=True)
def confirm_follow_message(payload: dict, delivery: Delivery) -> dict | None:
    """The link that confirms a guest's follow."""
    follower = db.session.get(Follower, payload["follower_id"])
    if follower is None or follower.confirmed_at is not None:
        return None
    return {
        "campaign": db.session.get(Campaign, follower.campaign_id),
        "confirm_link": external_url(
            "campaigns.confirm_follow", token=services.follow_token(follower)
        ),
    }


@message("campaign_invitation")  # a personal request, not news of a followed campaign
def invitation_message(payload: dict, delivery: Delivery) -> dict | None:
    """An invitation to co-organise, to the member whose address it was made to; nothing
    once it is answered, withdrawn, lapsed or reopened, or once the address is no longer
    theirs."""
    invitation = db.session.get(CampaignInvitation, payload["invitation_id"])
    if invitation is None or not invitation.is_open:
        return None
    if invitation.created_at.isoformat() != payload.get("sent_at"):
        return None  # reopened since: the newer notification tells of it
    if normalise_account_email(delivery.email) != invitation.email_key:
        return None
    return {
        "campaign": invitation.campaign,
        "inviter": invitation.invited_by.display_name if invitation.invited_by else None,
        "invitation": invitation,
        "invitation_link": external_url("campaigns.invitation", invitation_id=invitation.id),
    }


@message("campaign_step_down")  # news for the owner about their own campaign
def step_down_message(payload: dict, delivery: Delivery) -> dict | None:
    """To the owner: a co-organiser stepped down; nothing once the campaign is gone."""
    campaign = db.session.get(Campaign, payload["campaign_id"])
    if campaign is None:
        return None
    return {
        "campaign": campaign,
        "organiser_name": payload["organiser_name"],
        "manage_link": external_url("campaigns.manage", campaign_id=campaign.id),
    }


@periodic(interval=3600)
def forget_lapsed_invitations() -> int:
    """Delete invitations to co-organise that lapsed unanswered or were answered long ago."""
    return services.forget_lapsed_invitations()
