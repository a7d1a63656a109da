"""loradex.trainer"""
