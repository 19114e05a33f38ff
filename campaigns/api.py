"""Campaigns in the API, as OSDI advocacy campaigns, with their disclosure."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from campaigns import bp, services
from campaigns.models import FORMER_MEMBER, Campaign, CampaignOrganiser
from core.api import (
    LINKS_SCHEMA,
    ApiProblem,
    api_route,
    collection,
    collection_schema,
    hal,
    identifiers,
    iso,
    link,
    modified_filter,
    schema,
)
from core.extensions import db

ADVOCACY_CAMPAIGN = schema(
    "AdvocacyCampaign",
    {
        "type": "object",
        "required": [
            "identifiers",
            "title",
            "targets",
            "status",
            "industry_backed",
            "organisers",
        ],
        "properties": {
            "identifiers": {"type": "array", "items": {"type": "string"}},
            "origin_system": {"type": "string"},
            "created_date": {"type": "string", "format": "date-time"},
            "modified_date": {"type": "string", "format": "date-time"},
            "title": {"type": "string"},
            "description": {"type": "string"},
            "summary": {"type": "string"},
            "locality": {"type": "string"},
            "topic": {"type": "string"},
            "status": {"type": "string"},
            "targets": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "title": {"type": "string"},
                        "organization": {"type": "string"},
                        "stance": {"type": "string"},
                    },
                },
            },
            "funding": {"type": "string", "nullable": True},
            "funders": {"type": "array", "items": {"type": "object"}},
            "industry_backed": {"type": "boolean"},
            "organisers": {
                "type": "array",
                "description": (
                    "Who runs the campaign and their declared ties to sharing-economy "
                    "companies, as its page shows them."
                ),
                "items": {
                    "type": "object",
                    "required": ["name", "owner", "declared", "declared_date", "ties"],
                    "properties": {
                        "name": {
                            "type": "string",
                            "description": f'Display name, or "{FORMER_MEMBER}".',
                        },
                        "owner": {"type": "boolean"},
                        "declared": {
                            "type": "boolean",
                            "description": "False while their declaration is pending.",
                        },
                        "declared_date": {
                            "type": "string",
                            "format": "date-time",
                            "nullable": True,
                        },
                        "ties": {
                            "type": "array",
                            "description": "Empty when they declared no paid relationship.",
                            "items": {
                                "type": "object",
                                "required": ["company", "topic", "details"],
                                "properties": {
                                    "company": {"type": "string"},
                                    "topic": {"type": "string", "nullable": True},
                                    "details": {"type": "string", "nullable": True},
                                },
                            },
                        },
                    },
                },
            },
            "total_supporters": {"type": "integer", "minimum": 0},
            "browser_url": {"type": "string"},
            "_links": LINKS_SCHEMA,
        },
    },
)
ADVOCACY_CAMPAIGNS = collection_schema("AdvocacyCampaigns", ADVOCACY_CAMPAIGN)


def represent_organiser(organiser: CampaignOrganiser) -> dict[str, Any]:
    """An organiser as the disclosure on the campaign's page shows them."""
    ties = []
    if organiser.affiliation_company:
        ties.append(
            {
                "company": organiser.affiliation_company,
                "topic": organiser.affiliation_topic,
                "details": organiser.affiliation_details,
            }
        )
    return {
        "name": organiser.member.display_name if organiser.member else FORMER_MEMBER,
        "owner": organiser.is_owner,
        "declared": organiser.has_declared,
        "declared_date": iso(organiser.affiliation_declared_at),
        "ties": ties,
    }


def represent_campaign(campaign: Campaign) -> dict[str, Any]:
    return {
        "identifiers": identifiers("campaign", campaign.id),
        "origin_system": "Groundswell",
        "created_date": iso(campaign.created_at),
        "modified_date": iso(campaign.updated_at),
        "title": campaign.title,
        "summary": campaign.summary,
        "description": campaign.change_wanted,
        "locality": campaign.city,
        "topic": campaign.topic,
        "status": campaign.status,
        "targets": [
            {"name": m.name, "title": m.role, "organization": m.body, "stance": m.stance}
            for m in campaign.decision_makers
        ],
        "funding": campaign.funding,
        "funders": [
            {"name": f.name, "kind": f.kind, "amount_band": f.amount_band} for f in campaign.funders
        ],
        "industry_backed": campaign.industry_backed,
        "organisers": [represent_organiser(o) for o in campaign.organisers],
        "total_supporters": services.follower_count(campaign),
        "browser_url": link("campaigns.show", campaign_id=campaign.id)["href"],
        "_links": {"self": link("campaigns.api_campaign", campaign_id=campaign.id)},
    }


@api_route(
    bp,
    "/advocacy_campaigns",
    summary="Published campaigns, newest first, with their funding disclosure.",
    response=ADVOCACY_CAMPAIGNS,
    paged=True,
    entry="osdi:advocacy_campaigns",
)
def api_campaigns():
    query = select(Campaign).where(
        Campaign.published_at.is_not(None), *modified_filter(Campaign.updated_at)
    )
    return collection(
        query,
        order_by=[Campaign.id.desc()],
        rel="osdi:advocacy_campaigns",
        represent=represent_campaign,
        endpoint="campaigns.api_campaigns",
    )


@api_route(
    bp,
    "/advocacy_campaigns/<id:campaign_id>",
    summary="One published campaign.",
    response=ADVOCACY_CAMPAIGN,
)
def api_campaign(campaign_id: int):
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None or not campaign.is_published:
        raise ApiProblem(404, "There is no published campaign with that id.")
    return hal(represent_campaign(campaign))
