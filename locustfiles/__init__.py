"""Locust user classes, load shapes and the request/record pipeline."""
