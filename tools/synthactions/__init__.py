"""SynthActions v1 renderer (docs/synthactions.md), deterministic per seed.

A stream is planned first (:func:`tools.synthactions.planning.plan_stream`,
cheap, no pixels) and rendered second
(:func:`tools.synthactions.rendering.render_stream`, frames plus per-frame
ground truth), and :func:`tools.synthactions.dataset.write_dataset` turns many
streams into ``videos/*.mp4``, a THUMOS-style ``annotations.txt`` and a
``manifest.json``.

Modules, in the order they build on each other:

* ``limits``: the spec's limits and the tighter ones the planner keeps to;
* ``looks``: which backgrounds, actor shapes and fills, and noise a data set may use;
* ``sources``: the bundled photos and video clips;
* ``curves``: the easing curves of actions;
* ``scene``: the data classes (actors, background, segments, the plan, a frame's truth);
* ``geometry``: silhouettes and where an actor's box lies;
* ``scenery``: random actors and backgrounds;
* ``validation``: a plan's checks against the spec;
* ``planning``: a stream's timeline and states;
* ``textures``: procedural images and colour changes;
* ``rendering``: frames of a plan and mp4 files of them;
* ``dataset``: many streams into a data set on disk;
* ``alt_renderer``: an independent second renderer, written from the spec alone.
"""
