"""Mobile money at the centre: providers (PayGate Global, FedaPay), the payment state
machine, its store, the service that starts, checks and grants purchases, and a provider
simulator for the lab and the demo. Provider keys live only here, never on a hub."""
