"""Entities of the fraud example: card holders and merchants."""

from engine.definitions import Entity

user = Entity(name="user", join_keys=["user_id"], description="A card holder.")
merchant = Entity(name="merchant", join_keys=["merchant_id"], description="A merchant accepting payments.")
