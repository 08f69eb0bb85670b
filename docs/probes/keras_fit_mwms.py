"""docs/frameworks.md: Keras model.fit + BackupAndRestore under MWMS. Run 2 copies with TF_CONFIG; argv[1]: backup dir.
With Keras 3 (TF 2.21 default) fit fails; with `import tf_keras as keras` and TF_USE_LEGACY_KERAS=1 it runs."""
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np, tensorflow as tf, keras
idx = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
strategy = tf.distribute.MultiWorkerMirroredStrategy()
rng = np.random.default_rng(0)
x = rng.normal(size=(1024, 64)).astype("float32"); y = rng.integers(0, 10, 1024)
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64).repeat()
with strategy.scope():
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
cb = [keras.callbacks.BackupAndRestore(backup_dir=sys.argv[1])] if len(sys.argv) > 1 else []
try:
    h = model.fit(ds, epochs=2, steps_per_epoch=10, callbacks=cb, verbose=0)
    print(f"[fit] task {idx}: ok loss={h.history['loss'][-1]:.4f}", flush=True)
except Exception as e:
    print(f"[fit] task {idx}: FAILED {type(e).__name__}: {str(e).splitlines()[0][:300]}", flush=True)
    raise
