"""Training with the manual gradient beside autograd's, and the plot of both."""
