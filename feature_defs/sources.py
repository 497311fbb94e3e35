"""Sources of the fraud example: the transactions topic and the scoring request."""

from datetime import timedelta

from engine.definitions import EventSource, RequestSource

transactions = EventSource(
    name="transactions",
    topic="transactions",
    timestamp_field="ts",
    timestamp_format="epoch_millis",
    schema={
        "transaction_id": "string",
        "user_id": "string",
        "merchant_id": "string",
        "card_id": "string",
        "amount": "float",
        "currency": "string",
        "event_type": "string",
    },
    allowed_lateness=timedelta(minutes=5),
    description="Card transactions as JSON events, event time in epoch milliseconds.",
)

transaction_request = RequestSource(
    name="transaction_request",
    schema={"amount": "float"},
    description="The transaction being scored, sent with the request.",
)
