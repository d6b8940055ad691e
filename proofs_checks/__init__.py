"""proofs_checks"""
