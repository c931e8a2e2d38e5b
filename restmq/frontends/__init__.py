"""Front ends: thin adapters from a framing (HTTP, XML-RPC, lines) to the dispatcher."""
