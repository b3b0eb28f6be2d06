"""Amplitude ``event_type`` names per Currents event type.

Profile ``braze`` reproduces Braze's own Currents → Amplitude connector: ``[Appboy] `` plus
the display name of each type, ``[Appboy] [Custom Event] <name>`` for custom events. Names
that Braze's glossary does not show are inferred from its ``<Channel> <Action>`` pattern.
This table is a versioned contract: renaming an entry breaks existing Amplitude charts.
Profile ``plain`` uses the raw Currents type name (and the custom event's own name).
"""

from __future__ import annotations

import re

BRAZE_PREFIX = "[Appboy] "
BRAZE_CUSTOM_EVENT_PREFIX = "[Appboy] [Custom Event] "

BRAZE_DISPLAY_NAMES: dict[str, str] = {
    # Customer behaviour and user events
    "users.behaviors.CustomEvent": "Custom Event",  # named per event, see braze_event_type()
    "users.behaviors.Purchase": "Purchase",
    "users.behaviors.InstallAttribution": "Install Attribution",
    "users.behaviors.Location": "Location",
    "users.behaviors.Uninstall": "Uninstall",
    "users.behaviors.app.FirstSession": "First Session",
    "users.behaviors.app.SessionStart": "Session Start",
    "users.behaviors.app.SessionEnd": "Session End",
    "users.behaviors.liveactivity.PushToStartTokenChange": (
        "Live Activity Push To Start Token Change"
    ),
    "users.behaviors.liveactivity.UpdateTokenChange": "Live Activity Update Token Change",
    "users.behaviors.pushnotification.TokenStateChange": "Push Notification Token State Change",
    "users.behaviors.subscription.GlobalStateChange": "Global Subscription State Change",
    "users.behaviors.subscriptiongroup.StateChange": "Subscription Group State Change",
    "users.RandomBucketNumberUpdate": "Random Bucket Number Update",
    "users.UserOrphan": "User Orphan",
    "users.UserDeleteRequest": "User Delete Request",
    "users.profile.Update": "Profile Update",
    # Campaigns and Canvas
    "users.campaigns.Conversion": "Campaign Conversion",
    "users.campaigns.EnrollInControl": "Campaign Control Group Enrollment",
    "users.canvas.Entry": "Canvas Entry",
    "users.canvas.Conversion": "Canvas Conversion",
    "users.canvas.exit.MatchedAudience": "Exit Match Audience",
    "users.canvas.exit.PerformedEvent": "Exit Perform Event",
    "users.canvas.experimentstep.SplitEntry": "Experiment Step Split Entry",
    "users.canvas.experimentstep.Conversion": "Experiment Step Conversion",
    "users.canvas.costep.Send": "Canvas Co-Step Send",
    "users.canvasstep.Progression": "Canvas Step Progression",
    # Email
    "users.messages.email.Send": "Email Send",
    "users.messages.email.Delivery": "Email Delivery",
    "users.messages.email.Open": "Email Open",
    "users.messages.email.Click": "Email Click",
    "users.messages.email.Bounce": "Email Bounce",
    "users.messages.email.SoftBounce": "Email Soft Bounce",
    "users.messages.email.Deferral": "Email Deferral",
    "users.messages.email.MarkAsSpam": "Email Mark As Spam",
    "users.messages.email.Unsubscribe": "Email Unsubscribe",
    "users.messages.email.Abort": "Email Abort",
    "users.messages.email.Retry": "Email Retry",
    # Push
    "users.messages.pushnotification.Send": "Push Notification Send",
    "users.messages.pushnotification.Open": "Push Notification Open",
    "users.messages.pushnotification.IosForeground": "Push Notification iOS Foreground Open",
    "users.messages.pushnotification.Bounce": "Push Notification Bounce",
    "users.messages.pushnotification.Abort": "Push Notification Abort",
    "users.messages.pushnotification.Retry": "Push Notification Retry",
    # In-app messages, content cards, banners, feature flags
    "users.messages.inappmessage.Impression": "In-App Message Impression",
    "users.messages.inappmessage.Click": "In-App Message Click",
    "users.messages.inappmessage.Abort": "In-App Message Abort",
    "users.messages.contentcard.Send": "Content Card Send",
    "users.messages.contentcard.Impression": "Content Card Impression",
    "users.messages.contentcard.Click": "Content Card Click",
    "users.messages.contentcard.Dismiss": "Content Card Dismiss",
    "users.messages.contentcard.Abort": "Content Card Abort",
    "users.messages.banner.Impression": "Banner Impression",
    "users.messages.banner.Click": "Banner Click",
    "users.messages.banner.Dismiss": "Banner Dismiss",
    "users.messages.banner.Abort": "Banner Abort",
    "users.messages.featureflag.Impression": "Feature Flag Impression",
    # SMS
    "users.messages.sms.Send": "SMS Send",
    "users.messages.sms.CarrierSend": "SMS Send To Carrier",
    "users.messages.sms.Delivery": "SMS Delivery",
    "users.messages.sms.DeliveryFailure": "SMS Delivery Failure",
    "users.messages.sms.Rejection": "SMS Rejection",
    "users.messages.sms.InboundReceive": "SMS Inbound Receive",
    "users.messages.sms.ShortLinkClick": "SMS Short Link Click",
    "users.messages.sms.Abort": "SMS Abort",
    "users.messages.sms.Retry": "SMS Retry",
    # WhatsApp
    "users.messages.whatsapp.Send": "WhatsApp Send",
    "users.messages.whatsapp.Delivery": "WhatsApp Delivery",
    "users.messages.whatsapp.Read": "WhatsApp Read",
    "users.messages.whatsapp.Click": "WhatsApp Click",
    "users.messages.whatsapp.Failure": "WhatsApp Failure",
    "users.messages.whatsapp.InboundReceive": "WhatsApp Inbound Receive",
    "users.messages.whatsapp.Abort": "WhatsApp Abort",
    "users.messages.whatsapp.Retry": "WhatsApp Retry",
    # RCS
    "users.messages.rcs.Send": "RCS Send",
    "users.messages.rcs.Delivery": "RCS Delivery",
    "users.messages.rcs.Read": "RCS Read",
    "users.messages.rcs.Click": "RCS Click",
    "users.messages.rcs.Rejection": "RCS Rejection",
    "users.messages.rcs.InboundReceive": "RCS Inbound Receive",
    "users.messages.rcs.Abort": "RCS Abort",
    # LINE
    "users.messages.line.Send": "LINE Send",
    "users.messages.line.Click": "LINE Click",
    "users.messages.line.InboundReceive": "LINE Inbound Receive",
    "users.messages.line.Abort": "LINE Abort",
    "users.messages.line.Retry": "LINE Retry",
    # Webhooks and live activities
    "users.messages.webhook.Send": "Webhook Send",
    "users.messages.webhook.Failure": "Webhook Failure",
    "users.messages.webhook.Abort": "Webhook Abort",
    "users.messages.webhook.Retry": "Webhook Retry",
    "users.messages.liveactivity.Send": "Live Activity Send",
    "users.messages.liveactivity.Outcome": "Live Activity Outcome",
    # Agent console
    "agentconsole.AgentExecuted": "Agent Console Agent Executed",
    "agentconsole.ToolInvocation": "Agent Console Tool Invocation",
}

CUSTOM_EVENT_TYPE = "users.behaviors.CustomEvent"
PURCHASE_TYPE = "users.behaviors.Purchase"

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def generic_display_name(event_type: str) -> str:
    """A readable name for a type the table does not know (a future Currents type).

    ``users.messages.newchannel.SomethingHappened`` → ``Newchannel Something Happened``.
    """
    parts = event_type.split(".")
    if parts and parts[0] == "users":
        parts = parts[1:]
    if parts and parts[0] in ("messages", "behaviors"):
        parts = parts[1:]
    words = [_CAMEL_BOUNDARY.sub(" ", part) for part in parts]
    return " ".join(word[:1].upper() + word[1:] for word in words) or event_type


def braze_event_type(event_type: str, custom_event_name: str | None = None) -> str:
    """The ``event_type`` Braze's connector would send for a record of ``event_type``."""
    if event_type == CUSTOM_EVENT_TYPE:
        return BRAZE_CUSTOM_EVENT_PREFIX + (custom_event_name or "")
    display = BRAZE_DISPLAY_NAMES.get(event_type) or generic_display_name(event_type)
    return BRAZE_PREFIX + display


def plain_event_type(event_type: str, custom_event_name: str | None = None) -> str:
    """Raw names: the Currents type, or the custom event's own name."""
    if event_type == CUSTOM_EVENT_TYPE and custom_event_name:
        return custom_event_name
    return event_type
