"""A simulated plant (cars, wallboxes, meters, base load, solar) in simulated time, and a
harness that runs the service's own ServiceState and ControlLoop against it."""
