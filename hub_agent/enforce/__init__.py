"""Kernel enforcement on the hub: nftables captive firewall, tc shaping, discovery, dnsmasq."""
