"""Campaign messages, built in the worker from stored ids, and who receives them."""

from __future__ import annotations

from campaigns import services
from campaigns.models import Campaign, CampaignUpdate, Follower
from core.extensions import db
from core.urls import external_url
from notifications.services import Category, Delivery, audience, message


@message("campaign_update", category=Category.CAMPAIGNS)
def update_message(payload: dict, delivery: Delivery) -> dict | None:
    """An organiser's update, to a follower."""
    news = db.session.get(CampaignUpdate, payload["update_id"])
    if news is None:
        return None
    return {
        "update": news,
        "campaign": db.session.get(Campaign, news.campaign_id),
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
