"""Pure codecs: bytes in, values out. No Twisted, no Redis."""
