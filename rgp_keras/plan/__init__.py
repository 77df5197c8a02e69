"""Planning for latency: LiteRT latency tables (`latency`) and the per-layer planner (`search`)."""
