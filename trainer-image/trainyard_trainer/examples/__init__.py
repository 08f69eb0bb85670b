"""Example training scripts, runnable as modules: trainyard-launch -m trainyard_trainer.examples.train_digits."""
