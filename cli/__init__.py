"""loradex.cli"""
