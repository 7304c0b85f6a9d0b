"""pgkit.objectives (see ARCHITECTURE: estimator layer; imports only jax, chex, distrax)."""

__all__: list[str] = []
