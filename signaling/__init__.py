"""The standalone server: HTTP + WebSocket signaling, WHIP/WHEP, demo page."""
