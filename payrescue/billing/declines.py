"""The one table from provider decline codes to what they mean for the member.

Stripe reports a card's `decline_code` (issuer reason) and an error `code`; SEPA Direct Debit
failures carry Stripe's `failure_code` or the bank's ISO 20022 reason (AM04, MD01, …);
MemberPress reports none, which is "unknown". Each category says whether the provider retries
on its own, whether the member must act, whether the member may be told the reason, and which
message template the bot uses (`dunning/<category>`).
"""

from __future__ import annotations

from dataclasses import dataclass

from payrescue.i18n import _, lazy_gettext

EXPIRED_CARD = "expired_card"
INSUFFICIENT_FUNDS = "insufficient_funds"
WRONG_DETAILS = "wrong_details"
AUTHENTICATION_REQUIRED = "authentication_required"
ISSUER_DECLINED = "issuer_declined"
PROCESSING_ERROR = "processing_error"
FRAUD = "fraud"
BANK_ACCOUNT_CLOSED = "bank_account_closed"  # SEPA: the account is gone or blocked
MANDATE_REFUSED = "mandate_refused"  # SEPA: the debit was not authorised or was disputed
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Category:
    name: str
    provider_retries: bool  # the provider tries again by itself
    member_must_act: bool  # nothing improves until the member changes something
    reveal_to_member: bool  # False: never tell the member why (a human handles it)
    needs_human: bool
    explanation_msgid: str  # one sentence for the member; translate with explanation()
    agent_msgid: str  # the truth, for agents beside the chat (the member's may be vague)
    label_msgid: str  # a short name, for the figures

    @property
    def template(self) -> str:
        """The bot's message template for this category."""
        return f"dunning/{self.name}"

    def explanation(self) -> str:
        """The reason in the current language, fit to show the member."""
        return _(self.explanation_msgid)


def for_agents(name: str | None) -> str:
    """What an agent reads about a case's category, in the current language."""
    category = CATEGORIES.get(name or UNKNOWN)
    return _(category.agent_msgid) if category else (name or "").replace("_", " ")


def label(name: str) -> str:
    """The category's short name in the figures; a category we do not know reads as words."""
    category = CATEGORIES.get(name)
    return _(category.label_msgid) if category else name.replace("_", " ")


CATEGORIES: dict[str, Category] = {
    c.name: c
    for c in (
        Category(EXPIRED_CARD, False, True, True, False,
                 lazy_gettext("The card we have on file has expired."),
                 lazy_gettext("The card has expired"),
                 lazy_gettext("Expired card")),
        Category(INSUFFICIENT_FUNDS, True, False, True, False,
                 lazy_gettext("Your bank didn't approve the amount this time – often it's "
                              "just a limit or the timing."),
                 lazy_gettext("Not enough money on the account"),
                 lazy_gettext("Insufficient funds")),
        Category(WRONG_DETAILS, False, True, True, False,
                 lazy_gettext("Some of the payment details weren't accepted – for example "
                              "the card number, the security code or the IBAN."),
                 lazy_gettext("Card details are wrong"),
                 lazy_gettext("Wrong payment details")),
        Category(AUTHENTICATION_REQUIRED, False, True, True, False,
                 lazy_gettext("Your bank wants you to confirm this payment yourself "
                              "(3-D Secure)."),
                 lazy_gettext("The bank wants the member to confirm (3-D Secure)"),
                 lazy_gettext("Confirmation by the bank needed")),
        Category(ISSUER_DECLINED, True, True, True, False,
                 lazy_gettext("Your bank declined the payment without telling us why."),
                 lazy_gettext("The bank refused without giving a reason"),
                 lazy_gettext("Declined by the bank")),
        Category(PROCESSING_ERROR, True, False, True, False,
                 lazy_gettext("A technical hiccup stopped the payment – it wasn't "
                              "anything you did."),
                 lazy_gettext("A technical fault at the bank or provider"),
                 lazy_gettext("Processing error")),
        Category(FRAUD, False, False, False, True,
                 lazy_gettext("Your bank couldn't complete this payment with the card "
                              "on file."),
                 lazy_gettext("The bank suspects fraud, or the card was reported lost or stolen"),
                 lazy_gettext("Suspected fraud")),
        Category(BANK_ACCOUNT_CLOSED, False, True, True, False,
                 lazy_gettext("Your bank tells us the account we have on file is closed "
                              "or blocked."),
                 lazy_gettext("The bank account is closed or blocked"),
                 lazy_gettext("Bank account closed")),
        Category(MANDATE_REFUSED, False, True, True, True,
                 lazy_gettext("The direct debit was returned – either by the account "
                              "holder or by the bank."),
                 lazy_gettext("The direct debit was refused or disputed"),
                 lazy_gettext("Direct debit refused")),
        Category(UNKNOWN, True, False, True, False,
                 lazy_gettext("Unfortunately, we weren't given a reason."),
                 lazy_gettext("Reason unknown"),
                 lazy_gettext("Unknown reason")),
    )
}

_CODES: dict[str, str] = {}


def _map(category: str, *codes: str) -> None:
    for code in codes:
        _CODES[code.lower()] = category


# Stripe decline codes (https://docs.stripe.com/declines/codes) and error codes
_map(EXPIRED_CARD, "expired_card")
_map(INSUFFICIENT_FUNDS, "insufficient_funds", "withdrawal_count_limit_exceeded",
     "card_velocity_exceeded", "balance_insufficient")
_map(WRONG_DETAILS, "incorrect_number", "invalid_number", "incorrect_cvc", "invalid_cvc",
     "incorrect_zip", "invalid_expiry_month", "invalid_expiry_year", "invalid_account",
     "incorrect_address", "invalid_expiry_year_past", "incorrect_pin", "invalid_pin")
_map(AUTHENTICATION_REQUIRED, "authentication_required", "approve_with_id",
     "offline_pin_required", "online_or_offline_pin_required", "pin_try_exceeded",
     "payment_intent_authentication_failure", "authentication_not_handled")
_map(ISSUER_DECLINED, "generic_decline", "do_not_honor", "do_not_try_again", "call_issuer",
     "card_not_supported", "currency_not_supported", "transaction_not_allowed",
     "not_permitted", "service_not_allowed", "new_account_information_available",
     "no_action_taken", "revocation_of_all_authorizations", "revocation_of_authorization",
     "stop_payment_order", "invalid_amount", "duplicate_transaction", "card_declined",
     "security_violation_declined", "testmode_decline")
_map(PROCESSING_ERROR, "processing_error", "issuer_not_available", "try_again_later",
     "reenter_transaction", "api_connection_error", "rate_limit", "lock_timeout")
_map(FRAUD, "fraudulent", "lost_card", "stolen_card", "pickup_card", "restricted_card",
     "merchant_blacklist", "security_violation", "highest_risk_level")
# SEPA Direct Debit: Stripe's failure codes …
_map(BANK_ACCOUNT_CLOSED, "account_closed", "account_frozen", "bank_account_restricted",
     "no_account", "bank_ownership_changed")
_map(MANDATE_REFUSED, "debit_not_authorized", "debit_authorization_not_match",
     "debit_disputed", "refer_to_customer")
_map(WRONG_DETAILS, "invalid_account_number", "invalid_currency")
_map(PROCESSING_ERROR, "generic_could_not_process")
# … and the banks' ISO 20022 return reasons
_map(BANK_ACCOUNT_CLOSED, "ac04", "ac06", "ag01", "md07")
_map(MANDATE_REFUSED, "md01", "md06", "ms02", "sl01")
_map(WRONG_DETAILS, "ac01", "ac13", "rc01", "be05", "ff01")
_map(INSUFFICIENT_FUNDS, "am04")
_map(ISSUER_DECLINED, "ms03", "rr01", "rr02", "rr03", "rr04")
_map(PROCESSING_ERROR, "ed05", "am05")

# Codes by which the provider says *our* account is misconfigured: alarm the owner at once.
CONFIGURATION_ERRORS = frozenset({
    "account_invalid", "api_key_expired", "platform_api_key_expired", "secret_key_required",
    "testmode_charges_only", "livemode_mismatch", "platform_account_required",
    "account_country_invalid_address", "payment_method_not_available",
})


def classify(*codes: str | None) -> str:
    """The category of the first code we know (decline_code before code), else unknown."""
    for code in codes:
        if code and code.strip().lower() in _CODES:
            return _CODES[code.strip().lower()]
    if any(code and code.strip().lower() in CONFIGURATION_ERRORS for code in codes):
        return PROCESSING_ERROR
    return UNKNOWN


def is_configuration_error(*codes: str | None) -> bool:
    return any(code and code.strip().lower() in CONFIGURATION_ERRORS for code in codes)


def category(name: str | None) -> Category:
    """The category by name; unknown names (an older row) read as "unknown"."""
    return CATEGORIES.get(name or UNKNOWN, CATEGORIES[UNKNOWN])
