"""How the two streams are placed on processes. Model code sees only `StreamExchange`."""
