from caltech_cam.train import main

main()
