"""The fixed texts every parity proof and smoke test runs: no torch, so cluster-side commands can use them."""

from __future__ import annotations

# Fixed battery: short, long past any max length, unicode, punctuation only, repeated words, mixed case.
DOCUMENT_BATTERY = [
    "hello world",
    "The weather in New York is rainy today.",
    " ".join(["OpenSearch indexes sparse vectors as rank features and finds them with a neural sparse query."] * 60),
    "Café naïve façade über straße 日本 ünïcödé",
    "!!! ??? ... ,,, ;;; --- ((( )))",
    "rain rain rain rain rain rain rain rain",
    "MiXeD CaSe Tokens AND numbers 12345 67890",
    "a",
]
QUERY_BATTERY = [
    "what's the weather in ny now?",
    "rainy city",
    "sparse vector search engine",
    "café über",
    "!!!",
    "rain rain rain",
]
