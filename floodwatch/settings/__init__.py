"""Config sections: one frozen dataclass per section, one module per owner.

Every field has a default that suits a real host; tests override through their own TOML.
A field's type annotation is what floodwatch.config checks values against.
"""
