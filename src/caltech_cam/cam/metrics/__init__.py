"""The scores of CAM maps: localization on boxes, faithfulness (confidence, deletion/insertion, ROAD), the
randomization sanity check, and the registry `cam.scoring.score_cams` and the callback read them from."""
