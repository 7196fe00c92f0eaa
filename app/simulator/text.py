"""Ticket wording for the simulator: per-category templates, urgency and sentiment phrases.

``write_ticket`` turns a drawn category, urgency and sentiment into a subject and body,
with hurried-typing typos, so a text model has real words to learn from.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

_SYMBOL = {"USD": "$", "GBP": "£", "EUR": "€", "CAD": "CA$", "AUD": "A$", "CHF": "CHF ",
           "NZD": "NZ$", "SGD": "S$"}  # fmt: skip

_PRODUCTS = ("wireless headphones", "smart watch", "coffee grinder", "laptop stand",
             "robot vacuum", "e-reader", "phone case", "desk lamp", "gaming mouse",
             "air fryer", "yoga mat", "bluetooth speaker")  # fmt: skip
_PLANS = ("Basic plan", "Plus subscription", "Pro plan", "Family plan", "Business plan")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")  # fmt: skip


# category: (subjects, body sentences); slots: product, plan, order, amount, invoice, date
_TICKET_TEXT: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "billing": (
        ("Charged twice for order {order}", "Question about my invoice",
         "Wrong amount on my bill", "Refund for {order} not received",
         "Unexpected charge of {amount}", "Why was I billed {amount}?",
         "Invoice {invoice} is incorrect", "Payment taken but order shows unpaid",
         "Discount code not applied"),
        ("I was charged {amount} twice for order {order}.",
         "My card statement shows a payment of {amount} that I don't recognise.",
         "The invoice for my {plan} lists the wrong price.",
         "I returned the {product} two weeks ago and still haven't got my refund of {amount}.",
         "My discount code was not applied, so I paid {amount} more than I should have.",
         "You billed me for the {plan} even though I downgraded last month.",
         "Can you send me a corrected version of invoice {invoice}?",
         "My bank shows the payment but order {order} still says awaiting payment.",
         "There is a charge of {amount} from {date} on my account that I can't explain."),
    ),
    "technical": (
        ("App keeps crashing", "My {product} won't connect", "Error when I try to check out",
         "Website not loading", "Sync problem with my {product}", "Bug in the latest update",
         "Can't upload files", "Notifications stopped working",
         "Firmware update failed on {product}"),
        ("The app crashes every time I open the settings page.",
         "My {product} will not pair with my phone over bluetooth anymore.",
         "When I click pay I get an error saying something went wrong.",
         "The website just shows a blank page in every browser I try.",
         "Since the last update my {product} keeps dropping the wifi connection.",
         "I reinstalled the app but the problem is still there.",
         "The firmware update stopped at 60 percent and now the {product} won't turn on.",
         "Uploading anything larger than a few megabytes fails with error 500.",
         "Push notifications stopped arriving after I changed phones."),
    ),
    "account": (
        ("Can't log in", "Password reset email never arrives", "Change the email on my account",
         "Two-factor code not working", "Someone accessed my account",
         "Please delete my account data", "Update my address", "Wrong name on my profile",
         "Account suspended"),
        ("I can't log in even though I'm sure my password is right.",
         "The password reset email never arrives, and it's not in spam either.",
         "I need to change the email address on my account to my new one.",
         "The two-factor code from the authenticator app is always rejected.",
         "I got a login alert from a device I don't own.",
         "Please delete all personal data you hold about me.",
         "My name is spelled wrong on my profile and I can't edit it.",
         "I moved house and need to update my address before my next order.",
         "My account was suspended on {date} without any explanation."),
    ),
    "shipping": (
        ("Where is my order {order}?", "Package not delivered", "Tracking hasn't updated",
         "Wrong item received", "Parcel arrived damaged", "Delivered to the wrong address",
         "Missing item from order {order}", "Change delivery address for {order}",
         "Late delivery"),
        ("My order {order} was supposed to arrive on {date} and it's still not here.",
         "The tracking number hasn't updated for five days.",
         "I received a {product} instead of what I ordered.",
         "The box arrived crushed and the {product} inside is broken.",
         "The courier says it was delivered but nothing came to my door.",
         "Order {order} arrived without the {product}.",
         "Can I still change the delivery address for order {order}?",
         "The parcel was sent to my old address.",
         "The delivery was marked as failed but nobody rang the bell."),
    ),
    "cancellation": (
        ("Cancel my order {order}", "Cancel subscription", "Please stop my {plan}",
         "How do I cancel?", "Cancel before it ships", "Don't want to renew",
         "Ordered by mistake", "End my membership", "Cancel and refund please"),
        ("Please cancel order {order}, I placed it by mistake.",
         "I want to cancel my {plan} at the end of this month.",
         "I can't find the cancel button anywhere in the app.",
         "Please don't renew my {plan}, I no longer need it.",
         "I found the {product} cheaper elsewhere, so please cancel my order.",
         "If order {order} hasn't shipped yet, please cancel it.",
         "I'd like to end my membership and get back the {amount} for the unused months.",
         "Please confirm my subscription is cancelled and I won't be charged again.",
         "I changed my mind about the {product}, can you cancel it?"),
    ),
}  # fmt: skip
TICKET_CATEGORIES = tuple(_TICKET_TEXT)
_CONTEXT = ("My order number is {order}.", "I'm using the Android app.",
            "I'm on the iPhone app, latest version.", "I bought it on {date}.",
            "I've been a customer for {years}.", "This is on my {plan}.")  # fmt: skip
_URGENCY: dict[str, tuple[str, ...]] = {
    "high": ("This is urgent.", "Please sort this out asap.", "I need this fixed immediately.",
             "I'm locked out and can't do my work.", "I'm still waiting for an answer.",
             "This is the third time I'm contacting you about this.",
             "It's urgent, please reply today."),
    "medium": ("Could you look into this soon?", "I'd appreciate an answer this week.",
               "Please get back to me in the next few days.",
               "It would be good to get this sorted before the weekend."),
    "low": ("No rush on this.", "Whenever you have a moment is fine.", ""),
}  # fmt: skip
_SENTIMENT: dict[str, tuple[str, ...]] = {
    "negative": ("This is ridiculous.", "I'm really frustrated with your service.",
                 "Honestly, this is unacceptable.", "Worst experience I've had with a shop.",
                 "I'm very disappointed.", "I'm fed up with this."),
    "positive": ("Thanks so much for your help!", "I love the {product}, just this one issue.",
                 "You've always been great, so I'm sure this is quick to fix.",
                 "Many thanks in advance, I really appreciate it.",
                 "Great service so far, thank you."),
    "neutral": ("",),
}  # fmt: skip
# Accounts get locked and parcels go missing; cancellations rarely burn.
URGENCY_WEIGHTS = {
    "billing": (25, 35, 40),
    "technical": (25, 35, 40),
    "account": (45, 30, 25),
    "shipping": (30, 40, 30),
    "cancellation": (10, 35, 55),
}
_GREETINGS = ("", "Hi,", "Hello,", "Dear support team,", "Hi there,")
_SIGN_OFFS = ("", "", "Regards, {name}", "Best, {name}", "{name}")
_NAMES = ("Anna", "Ben", "Carla", "David", "Emre", "Fatima", "Giulia", "Hugo", "Ines", "Jonas")


def _typos(rng: random.Random, text: str, rate: float = 0.05) -> str:
    """Swap or drop one letter in about ``rate`` of the words, like hurried typing."""
    words = text.split(" ")
    for n, word in enumerate(words):
        if len(word) >= 4 and word.isalpha() and rng.random() < rate:
            i = rng.randrange(len(word) - 1)
            if rng.random() < 0.5:
                words[n] = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
            else:
                words[n] = word[:i] + word[i + 1 :]
    return " ".join(words)


def _years(days: int) -> str:
    years = days // 365
    return "less than a year" if years < 1 else f"{years} year{'s' if years > 1 else ''}"


# What someone whose account was taken over writes: every subject matches the rules'
# ``(?i)password|locked out`` and is sent without typos so that it keeps matching.
TAKEOVER_SUBJECTS = ("Password reset email never arrives", "Locked out of my account",
                     "Password reset I didn't ask for", "I'm locked out",
                     "Someone changed my password", "Can't reset my password")  # fmt: skip


def write_ticket(
    rng: random.Random,
    category: str,
    urgency: str,
    sentiment: str,
    currency: str,
    age_days: int,
    when: datetime,
    subject: str | None = None,
) -> tuple[str, str]:
    """A (subject, body) for a ticket; a given ``subject`` is used as is, without typos."""
    past = when - timedelta(days=rng.randint(1, 30))
    slots = {
        "product": rng.choice(_PRODUCTS),
        "plan": rng.choice(_PLANS),
        "order": f"#{rng.randint(100_000, 999_999)}",
        "amount": f"{_SYMBOL[currency]}{rng.lognormvariate(3.5, 0.8):.2f}",
        "invoice": f"INV-{rng.randint(10_000, 99_999)}",
        "date": f"{_MONTHS[past.month - 1]} {past.day}",
        "years": _years(age_days),
        "name": rng.choice(_NAMES),
    }
    subjects, sentences = _TICKET_TEXT[category]
    if subject is None:
        subject = rng.choice(subjects)
        if urgency == "high" and rng.random() < 0.3:
            subject = f"URGENT: {subject}"
        subject = _typos(rng, subject.format(**slots))
    body = rng.sample(sentences, k=_pick_count(rng))
    if rng.random() < 0.4:
        body.append(rng.choice(_CONTEXT))
    body.append(rng.choice(_URGENCY[urgency]))
    feeling = rng.choice(_SENTIMENT[sentiment])
    body.insert(0 if sentiment == "negative" and rng.random() < 0.5 else len(body), feeling)
    parts = [rng.choice(_GREETINGS), *body, rng.choice(_SIGN_OFFS)]
    text = " ".join(part.format(**slots) for part in parts if part)
    return subject, _typos(rng, text)


def _pick_count(rng: random.Random) -> int:
    return rng.choices((1, 2, 3), weights=(5, 4, 1), k=1)[0]
