"""The simulator twin: tasks whose closed loop runs in simulation (Meta-World, and a tiny numpy
task for tests). Closed-loop evaluation runs candidates here; the simulated fleet (sim/) uses
the same tasks as the world its robots work in."""
