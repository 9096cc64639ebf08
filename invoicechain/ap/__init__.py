"""Accounts-payable domain: validate_invoice, match_po, run_approval, trigger_payment, review."""
