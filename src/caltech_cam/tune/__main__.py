from caltech_cam.tune.study import main

main()
