"""Relais central operations: enrollment, config push, fleet health, vouchers, content."""
