"""Keeping every box's copy of the passel's state: the task table's replica feed, the hand-over of a
box's own tasks to a new coordinator, and the admin password. It sits above both the cluster (whose
table it copies) and discovery (whose peers it talks to), so neither of those knows the other."""
