"""hop.tools: measuring tools that run the engine from outside: hop-bench, hop-soak and the
virtual microphone they (and the tests) feed. Nothing in the runtime imports them."""
