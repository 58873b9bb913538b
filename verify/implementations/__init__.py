"""implementations"""
