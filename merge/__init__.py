"""loradex.merge"""
